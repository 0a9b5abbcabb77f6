"""SWIM + Lifeguard membership (sans-I/O core). Not built yet: see issue 3."""
