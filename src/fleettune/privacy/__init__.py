"""Privacy tools for aggregating client updates without revealing any single client's update.

`fleettune.privacy.secagg` holds a secure aggregation protocol: the server learns only the sum of the
clients' vectors, even when some clients drop out part-way.
"""
