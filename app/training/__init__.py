"""The training tab: run form, live monitor and plots, launch of `main.py train` in its own process."""
