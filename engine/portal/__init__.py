"""The advisor portal: a web application (pages and a JSON API) over a book and its runs.

Owns the portal's service (:mod:`~engine.portal.service`: a warm what-if session, saves of
customizations, new accounts, withdrawal requests), how a change is read and checked
(:mod:`~engine.portal.changes`), its users (:mod:`~engine.portal.users`) and the ASGI app
(:mod:`~engine.portal.app`, :mod:`~engine.portal.pages`, :mod:`~engine.portal.security`) with its templates and static files.

May import: :mod:`engine.contract`, :mod:`engine.kernels`, :mod:`engine.solver`, :mod:`engine.book`,
:mod:`engine.rebalance`, :mod:`engine.review`, :mod:`engine.simulate` (storage only through
:mod:`engine.book`).
"""
