"""As in Colab: the base class of the errors its modules raise."""


class Error(Exception):
    """Base class of google.colab errors."""
