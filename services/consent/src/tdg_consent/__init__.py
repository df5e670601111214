"""tdg consent service: who may do what with which data, and what citizens agreed to."""
