"""Moving data: parallel COPY streams, ranges of large tables, large objects, ANALYZE after the load, and the limits
on data work.
"""
