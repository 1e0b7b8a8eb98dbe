"""hyperflow."""
