"""Renderers of plans: the preview (text and JSON) and the reviewable bash script."""
