"""The console's screens: the watchlist (home with several markets), the market view (home with
one), feeds & system, and the keys' help. Each reads what it shows from the stats block through
the app (``ObituiApp.tick`` gives the screen on top a :class:`~obitui.ui.base.Frame`)."""
