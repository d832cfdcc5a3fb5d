"""Data: image sources × degradations (noise, rain, bicubic) × transforms."""
