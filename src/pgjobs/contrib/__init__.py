"""Optional integrations with web frameworks and ORMs; the core never imports them."""
