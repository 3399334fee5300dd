# Data files shipped with Airway Studio; located through core.resources.
