"""Command handlers: parse `/pgmig` text and clicks, authorize, call the core, render Block Kit."""
