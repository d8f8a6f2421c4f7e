"""Example app (a package only so that type checkers tell its app.py from the others)."""
