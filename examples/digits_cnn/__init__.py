"""A small CNN on scikit-learn's 8x8 digit images, tuned by hyperflow as a user's own model."""
