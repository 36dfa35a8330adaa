"""Sample documents (reST, Markdown, plain text) for the markup, chunking and build tests: each paragraph
carries a token (``Token rst01.``) so order and completeness can be checked; code that must be dropped says so."""


# Near-duplicate paragraphs (a word or two differ), in different files; and unrelated ones.
BAKERY = ("The bakery on the corner opens at six in the morning and sells fresh bread, croissants and "
          "cinnamon rolls to the people of the village before they go to work.")
BAKERY2 = ("The bakery on the corner opens at seven in the morning and sells fresh bread, croissants and "
           "cinnamon rolls to the people of the village before they go to work.")

RST = f"""\
:mod:`queueing` --- Waiting lines
=================================

.. module:: queueing
   :synopsis: Waiting lines.

.. index:: single: queue

Token rst01. The :mod:`queueing` module implements waiting lines where the first element that came in is the
first to leave, as in :func:`~collections.deque.popleft`. See :ref:`the guide <queue-guide>` for
``put`` and ``get``.

.. note::

   Token rst02. A waiting line is **not** a stack; the *order* of arrival decides who is served next.

Serving customers
-----------------

Token rst03. Customers are served one at a time. A clerk calls the next customer, checks the ticket and
answers the questions of that customer until everything is settled, then calls the next one::

    while line:
        serve(line.popleft())

.. code-block:: python

   print("this code must not appear")

{BAKERY}

.. _queue-guide:

Token rst05. Glaciers form where snow accumulates faster than it melts over many years; the weight of new
snow compresses the old layers into dense blue ice that slowly flows downhill under gravity.

.. versionadded:: 3.4

Token rst06. Volcanic eruptions eject ash high into the stratosphere, where the fine particles reflect
sunlight and can cool the global climate for a year or two after a large eruption.
"""

MD = f"""\
# Gardening notes

Token md01. Tomatoes need **full sun**, regular watering and a sturdy stake; see [the guide](https://example.org)
for `pruning` advice. Pinch the side shoots so that the plant puts its energy into the fruit.

```python
print("fenced code must not appear")
```

{BAKERY2}

## Soil

Token md03. Compost improves the structure of clay soil and feeds the worms that keep it loose and airy;
spread a thick layer in autumn and let the winter frost break it down.
"""

TXT = """\
Token txt01. The orchestra tuned their instruments while the audience found their seats in the old concert
hall, and the conductor waited in the wings for the lights to dim.

Token txt02. The first movement began quietly with the strings, then the brass entered with a bold theme that
returned at the end of the piece in a different key.

Token txt03. After the interval the soloist played a concerto that was written for her by a young composer,
and the hall erupted in applause when the last chord faded away.
"""


def write_docs(root):
    (root / "docs" / "sub").mkdir(parents=True)
    (root / "docs" / "queueing.rst").write_text(RST)
    (root / "docs" / "sub" / "garden.md").write_text(MD)
    (root / "docs" / "concert.txt").write_text(TXT)
    (root / "docs" / "ignored.py").write_text("print('not a document')\n")
    return root / "docs"
