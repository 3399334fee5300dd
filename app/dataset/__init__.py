"""A dataset in the app: the worklist dock, Save and next, the state shared with other windows.

``install_dataset(window)`` (called by :class:`app.main_window.MainWindow`) adds the actions
(File > Open dataset..., the Dataset menu), the dock and the status-bar fields, and returns the
window's :class:`DatasetController` (``window.dataset``).
"""

from __future__ import annotations

from app.dataset.controller import DatasetController, DatasetWindow

__all__ = ["DatasetController", "DatasetWindow", "install_dataset"]


def install_dataset(window: DatasetWindow) -> DatasetController:
    return DatasetController(window)
