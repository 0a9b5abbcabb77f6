"""keycafe's own Python cluster client. Not built yet: see issue 5."""
