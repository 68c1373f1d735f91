"""One recommender per file behind the :class:`models.base.Recommender` interface."""
