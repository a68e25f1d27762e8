import unittest

from greet import greet


class GreetTest(unittest.TestCase):
    def test_greets_by_name(self):
        self.assertEqual(greet("Ann"), "Hello, Ann!")


if __name__ == "__main__":
    unittest.main()
