"""The measurement recipe: one checkpoint, start to finish, in one or several processes."""
