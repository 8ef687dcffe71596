"""What comes back after sending: bounces, complaints, unsubscribes, and the breakers they trip."""
