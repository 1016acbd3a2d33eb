"""Session manager: one sandbox per (runtime, session id), lifecycle, limits, pools."""
