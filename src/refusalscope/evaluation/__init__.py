"""Steering with the feature sets, judged and costed: the sweep that picks (c, K*),
jailbreaks, the capability cost and refusal induction, with their statistics."""
