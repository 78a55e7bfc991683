"""apo: human-assisted refinement of VLA policies by Action Preference Optimization.

Data flows one way: env -> recorder -> dataset -> sampler -> objective -> trainer -> policy -> env.
"""

__version__ = "0.1.0"
