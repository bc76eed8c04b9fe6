"""The major Chennai neighbourhoods: centres as commonly published, a radius that
still counts as the area (larger for the sprawling suburbs). Shipped by the
migration geo/0002 and re-seeded by `service_areas_seed_chennai` (tests, demos)."""

# (name, latitude, longitude, radius km)
CHENNAI_AREAS = [
    ("Adyar", 13.0012, 80.2565, 2.5),
    ("Alwarpet", 13.0339, 80.2540, 1.5),
    ("Ambattur", 13.1143, 80.1548, 4.0),
    ("Anna Nagar", 13.0891, 80.2107, 3.0),
    ("Ashok Nagar", 13.0350, 80.2123, 1.5),
    ("Avadi", 13.1067, 80.0970, 4.0),
    ("Besant Nagar", 13.0003, 80.2667, 1.5),
    ("Chetpet", 13.0714, 80.2417, 1.5),
    ("Chromepet", 12.9516, 80.1462, 2.5),
    ("Egmore", 13.0732, 80.2609, 2.0),
    ("George Town", 13.0940, 80.2870, 1.5),
    ("Guindy", 13.0067, 80.2206, 2.5),
    ("K. K. Nagar", 13.0410, 80.1990, 1.5),
    ("Kilpauk", 13.0825, 80.2417, 1.5),
    ("Kodambakkam", 13.0521, 80.2255, 2.0),
    ("Kolathur", 13.1245, 80.2120, 2.0),
    ("Koyambedu", 13.0694, 80.1948, 2.0),
    ("Madhavaram", 13.1488, 80.2306, 3.0),
    ("Medavakkam", 12.9171, 80.1923, 3.0),
    ("Mogappair", 13.0837, 80.1750, 2.0),
    ("Mylapore", 13.0368, 80.2676, 2.0),
    ("Nungambakkam", 13.0569, 80.2425, 1.5),
    ("Pallavaram", 12.9675, 80.1491, 3.0),
    ("Perambur", 13.1210, 80.2329, 2.5),
    ("Perungudi", 12.9654, 80.2461, 2.0),
    ("Porur", 13.0382, 80.1565, 3.0),
    ("Royapuram", 13.1137, 80.2954, 2.0),
    ("Saidapet", 13.0213, 80.2231, 1.5),
    ("Sholinganallur", 12.9010, 80.2279, 3.0),
    ("T. Nagar", 13.0418, 80.2341, 2.0),
    ("Tambaram", 12.9249, 80.1000, 4.0),
    ("Thiruvanmiyur", 12.9830, 80.2594, 2.0),
    ("Thiruvottiyur", 13.1600, 80.3000, 3.0),
    ("Triplicane", 13.0588, 80.2756, 1.5),
    ("Vadapalani", 13.0500, 80.2121, 1.5),
    ("Velachery", 12.9815, 80.2180, 2.5),
    ("Villivakkam", 13.1080, 80.2090, 2.0),
]


def seed(model) -> int:
    """Add the missing areas with `model` (the real one, or a migration's historical one)."""
    added = 0
    for name, latitude, longitude, radius_km in CHENNAI_AREAS:
        _, created = model.objects.get_or_create(
            city="Chennai",
            name=name,
            defaults={"latitude": latitude, "longitude": longitude, "radius_km": radius_km},
        )
        added += created
    return added
