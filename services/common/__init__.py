"""Pieces shared by the three services: mutual TLS, error translation, server wiring."""
