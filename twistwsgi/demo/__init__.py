"""The demo site ``make run`` serves."""
