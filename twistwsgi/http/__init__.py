"""HTTP/1.1 on the wire: the protocol, the Exchange seam, and the pure rules beneath them."""
