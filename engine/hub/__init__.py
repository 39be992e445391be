"""Publishing to the Hugging Face Hub: `tailor push` (push.py), its model card (card.py) and
loss curve (png.py)."""
