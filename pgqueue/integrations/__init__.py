"""Framework integrations, each imported only when its framework's objects reach pgqueue."""
