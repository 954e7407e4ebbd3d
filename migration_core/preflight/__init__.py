"""What must hold on both servers before a migration starts."""
