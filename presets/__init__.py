"""The built-in presets (YAML), shipped inside the package as svdcli.preset_files."""
