"""The `compare` endpoint's values as the page opens (the offline default's question), shared by the page's
API tests, which change only what each of them is about."""

QUESTION = "Dünyanın en soğuk yeri neresidir?"
DEFAULTS = dict(question=QUESTION, soup_w1=0.5, soup_w2=0.5, slerp_t=0.5, ties_density=0.5, ties_w1=1.0, ties_w2=1.0,
                ties_density1=None, ties_density2=None, ties_lambda=1.0, slerp_attn_schedule="",
                slerp_mlp_schedule="", extra_method="", extra_density=0.5, max_new_tokens=12, temperature=0.7,
                top_p=0.9, repetition_penalty=1.0, greedy=True, seed=0)
