"""What each pipeline does for one database."""
