"""Privacy tools: limiting what the server, other clients or an eavesdropper learn about one client's data.

`fleettune.privacy.secagg` holds a secure aggregation protocol: the server learns only the sum of the
clients' vectors, even when some clients drop out part-way.
"""
