"""Re-examining Feldman & Zhang (2020): the thin library every notebook calls."""
