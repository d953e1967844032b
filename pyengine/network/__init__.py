"""Networks: the network store (<data-root>/networks/<id>.json), IPAM, published ports and the
/etc/hosts and /etc/resolv.conf a container gets.

``manager.NetworkManager`` is the entry point the CLI and the container engine call; it talks to
network drivers only through ``pyengine.drivers.network.NetworkDriver``.
"""
