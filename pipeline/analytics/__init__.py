"""User analytics over the lake (DESIGN 16): retention, lifecycle, RFM and person tags.

Every report is one DuckDB query over the lake, persons as One ID knows them now (the rule of
``events_resolved``, applied after reducing the rows: ``persons.py``), in the project time
zone. No Faust: the functions take a DuckDB connection that has
the lake's views (``pipeline.lake.views.connect``).
"""
