"""evogm: find the best task-arithmetic merge of fine-tuned experts of one base LLM.

The merged model is θ(λ) = θ₀ + Σᵢ λᵢ τᵢ; evogm searches λ by evaluating merged candidates on
task data, with the EvoGM learned optimizer and equal-budget baselines.
"""

__version__ = "0.1.0"
