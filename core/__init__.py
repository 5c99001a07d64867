"""The policies every layer shares: one error base, one strict configuration
base, one seed derivation. The bottom layer: it imports nothing of Personae."""
