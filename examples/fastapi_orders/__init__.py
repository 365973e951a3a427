"""An orders API whose orders and background jobs commit together: FastAPI, SQLAlchemy async, pgqueue."""
