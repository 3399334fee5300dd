"""The review workspace: the Qt adapter over core.review (case state, jobs), slice views, 3D view, panels."""
