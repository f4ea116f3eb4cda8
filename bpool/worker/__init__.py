"""The worker side of the pool: the DEALER link to the broker (a pure state machine and its
socket), browser engines, process reaping and cookie-file profiles."""
