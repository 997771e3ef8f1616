"""One ID: identity rules, the identity graph, stitching events to persons, person trails."""
