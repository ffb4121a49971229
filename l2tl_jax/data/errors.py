"""The one exception the input module raises for bad input."""


class DataError(ValueError):
  """A dataset, split or setting that cannot be used as asked.

  The message names the problem (which dataset, file, class or count) and the
  fix (which setting to change or what to put where).
  """
