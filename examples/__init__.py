"""Examples of hyperflow tuning a user's own model."""
