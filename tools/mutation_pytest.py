"""pytest plugin for tools/mutation.py: a failing hypothesis test is not shrunk (a mutant is
killed by the first counterexample; shrinking it can take longer than the whole selection)."""

from hypothesis import Phase, settings

settings.register_profile("mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate],
                          deadline=None)
settings.load_profile("mutation")
