"""Member data and profiles (DESIGN section 14): mapping, transforms, rules, sources, apply.

A domain subpackage: no Faust, no other domain package (the CLI and the sink wire it to
the lake and to One ID).
"""
