"""Refinements of the similarity maps at the image's size (PAMR), before probabilities and labels."""
