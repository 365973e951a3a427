"""A minimal Django project (one app, `orders`) for the Django integration tests and their worker processes."""
