"""Console pages, one module each; ``setup(app)`` adds a module's routes."""
