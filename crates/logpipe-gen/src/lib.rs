//! Synthetic log and event generator, sample endpoints and the load client.
