# The sandbox image has no pytest, so this project tests itself with the standard library.
# ruff: noqa: PT009, PT027
import unittest

from calc import add, mean


class CalcTest(unittest.TestCase):
    def test_add(self) -> None:
        self.assertEqual(add(2, 3), 5)

    def test_mean(self) -> None:
        self.assertEqual(mean([1, 2, 3, 4]), 2.5)

    def test_mean_of_nothing(self) -> None:
        with self.assertRaises(ValueError):
            mean([])
