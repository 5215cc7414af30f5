"""The bundled study files (``*.yaml``); a package so that they ship with the wheel."""
